"""Every SQL statement PowerPulse runs, one module per aggregate; each call takes the tenant."""
