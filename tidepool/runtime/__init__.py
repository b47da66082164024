"""Runtime pieces every tidepool process shares; a leaf: it imports nothing else of the project."""
