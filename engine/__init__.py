"""The review engine shared by the command line and the App: a diff's findings (base, head, copies) computed in
isolated worker processes. It imports analyzers, never bot, runners or the command line."""
