"""Example plug-in strategies, written the way a user would write their own (see docs/strategies.md)."""
