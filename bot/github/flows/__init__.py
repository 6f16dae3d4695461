"""One module per flow, each the whole story of one event, command or job: what it reads, decides and
publishes."""
