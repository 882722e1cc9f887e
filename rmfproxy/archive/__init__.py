"""Archive continuity: which source covered which time (coverage journal), and what reads it."""
