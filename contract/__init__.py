"""What the router and the worker must do the same way, written once; imports neither program.

- the wire contract between them and their clients: session ids and workspace paths
  (``ids``, ``paths``), client tokens (``auth``), the admin bearer guard (``admin_token``),
  the JSON protocol's messages and pre-join rules (``json_protocol``), close codes
  (``close_codes``), the worker→router ownership answer (``routing``);
- the process conventions operators rely on: environment parsing (``env``), log lines
  (``logs``), timestamps (``timefmt``), and how uvicorn is run (``server``).

``tests/test_layering.py`` fails when ``router`` imports ``worker`` or the reverse, or when
this package imports either.
"""
