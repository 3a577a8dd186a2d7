"""Running the checks: the scheduler, one probe contract with its adapters (checks),
mon's alert semantics per host and service (rules), alert delivery, mon's exec protocol
for legacy scripts, and the loading of built-in and drop-in plugins."""
