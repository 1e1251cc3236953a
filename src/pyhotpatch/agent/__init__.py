"""The node agent: enrols a machine, supervises its service, assesses and installs releases."""
