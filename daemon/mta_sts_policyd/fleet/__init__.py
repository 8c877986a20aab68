"""Fleet mode: many daemons share one policy cache and send one TLS report per domain and day,
through Redis (docs/fleet.md).

Redis makes the fleet efficient and consistent; it is never needed to answer a query
correctly. Every Redis call goes through one guarded client (`connection.py`: the client's own
timeouts, a circuit breaker from `breaker.py`), every key is named in `keys.py`, and every
value read back is validated like input from the network. The policy and TLS-RPT parts never
import this one: they name what they need as protocols (`policy/types.py`) and the composition
root plugs the fleet in. May import: policy, tlsrpt, sts, config-free settings only.
"""
