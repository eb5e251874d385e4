"""What the user sees, drawn from events: views never decide."""
