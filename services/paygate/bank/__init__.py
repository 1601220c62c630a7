"""A bank server: the ledger of its own accounts and a participant in two-phase commits."""
