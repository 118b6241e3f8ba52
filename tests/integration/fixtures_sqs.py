"""pytest fixtures for the sqs part of the throwaway stack."""

__all__: list[str] = []
