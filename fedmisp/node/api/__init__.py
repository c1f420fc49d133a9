"""The node's HTTP API: MISP's REST API, and beside it the peer protocol (/fed/v1), the operator
endpoints (/node/v1) and the served feeds (/feed). app.py assembles them; each other module declares
its own routes and who may call each (access.py); shared helpers are in helpers.py; restSearch's
parameters are read in params.py and its formats written by export/formats.py (docs/api.md)."""
