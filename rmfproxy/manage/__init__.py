"""Site management: live configuration and its revisions, planning, consolidation."""
