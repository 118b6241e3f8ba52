"""pytest fixtures for the postgres part of the throwaway stack."""

__all__: list[str] = []
