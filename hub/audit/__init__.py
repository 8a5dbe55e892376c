"""The NEN 7513 audit trail: every access as a BALP-shaped AuditEvent in a hash-chained table.

record.py builds the events, chain.py stores them (hash chain, signed checkpoints), interceptor.py
is the pipeline step, api.py serves auditors (search, export), access_log.py the patient's view,
verify.py checks the chain (`hub audit verify`).
"""
