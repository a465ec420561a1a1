"""Fleet planning: the inventory (SQLite) and the planner (admission, levelling, upgrade plans)."""
