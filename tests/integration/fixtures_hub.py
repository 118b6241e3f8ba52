"""pytest fixtures for the hub part of the throwaway stack."""

__all__: list[str] = []
