"""The `drbot` command: `drbot analyze`, `drbot review`, `drbot rules` (and, with extras, the App and runners)."""
