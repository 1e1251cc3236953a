"""The web portal: server-rendered pages under ``/portal`` over the control plane's own API."""

from pyhotpatch.server.portal._routes import install_portal

__all__ = ["install_portal"]
