"""What a level with an outer optimizer or compression keeps between its reductions: the
anchor, and the outer step on the pseudo-gradient."""
