"""Block schedules (how far to draft) and the cost tables the adaptive one reads."""
