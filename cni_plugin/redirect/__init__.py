"""In-pod traffic redirection: the rule set as data (`rules`), applied through netlink (`apply`)."""
