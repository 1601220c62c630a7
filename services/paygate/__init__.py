"""Paygate: a payment gateway and its bank servers.

The public client API is in `paygate.client`; the errors every part raises are in
`paygate.errors`. See ARCHITECTURE.md for the map of the code.
"""

__version__ = "0.1.0"
