"""`host status`: is every domain the policy host serves delegated to it, published with the id
of what it serves, and covered by a valid certificate? Findings use `check`'s codes."""
