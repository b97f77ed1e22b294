"""The grid runner (tasks × methods × seeds), its results table and resume logic."""
