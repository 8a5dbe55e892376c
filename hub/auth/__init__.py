"""Authentication and authorisation: the hub's own OAuth2 / SMART on FHIR authorisation server
(clients, keys, tokens) and scope enforcement in the interaction pipeline."""
