"""What a practitioner takes home from a run, beyond the model: label issues and a cleaned set."""
