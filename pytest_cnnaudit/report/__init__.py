"""Reports written from the audit document: terminal summary, HTML (+ charts), starting config."""
