"""The composition root: the catalogue of services, the control plane that runs them, the HTTP application."""
