"""What the user asked for, checked before any collective: the schedule (pure arithmetic),
the levels and their options, and the optimizer's frozen configuration."""
