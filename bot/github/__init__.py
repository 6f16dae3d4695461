"""The GitHub App: webhooks, the GitHub API client and source, publishing, and worker jobs."""
