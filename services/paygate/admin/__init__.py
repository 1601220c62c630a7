"""paygate-admin: the operators' command-line tool for the banks' ledgers."""
