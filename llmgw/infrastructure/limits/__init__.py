"""Counter stores behind limits and budgets: per process (memory) or shared by every replica (Redis)."""
