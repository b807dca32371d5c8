"""The papers' experiments (EchoGAINS Tables 3/4, Echo-DND Tables 2/4) as one-command scripts; see README.md."""
