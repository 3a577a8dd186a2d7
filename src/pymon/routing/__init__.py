"""Active-active directors: announce a VIP over BGP while this director can serve it.

pymon decides, BIRD 2 speaks BGP. Per VIP of the `virtual_services`, `announce.step`
(pure) decides from READY, quorum or pooled real servers, self fault, the operator's
disable and a clean stop; `owner.Routes` evaluates every `interval`, damps with
rise/fall, and hands the result to BIRD as a host route in a kernel table of its own
(kernel.py); BIRD's `kernel` protocol learns the table and exports it over BGP.

Its options are read by the config model (model/routing.py); the wiring (app.py) passes
the rest as plain data and callbacks.
"""
