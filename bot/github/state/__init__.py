"""What evalbot keeps between deliveries and jobs, in Redis and the store, behind small functions:
verdicts, approvals and the audit trail, aborts, run records, spend. Below context and flows; may
import bot/github/api (a payload's types), never the reverse."""
