"""What the operator wrote: the config schema, its dataclasses and loader, time periods,
YAML positions. Pure data and parsing: nothing here runs a check or touches the kernel."""
