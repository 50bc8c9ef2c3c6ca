"""Privacy: what a split leaks (dCor) and the defences a client applies to what it uploads."""
