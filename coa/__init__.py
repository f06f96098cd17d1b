"""The core every stage speaks: trajectories and their format, scoring, the search environment."""
