"""One rule per module, `drbNNN_<slug>.py`; `analyzers.core.all_rules()` finds them all."""
