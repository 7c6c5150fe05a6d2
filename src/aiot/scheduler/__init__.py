"""Schedules in the user's time zone, occurrences in UTC, fired exactly once by any number of replicas."""
