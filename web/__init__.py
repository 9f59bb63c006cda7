"""The customer web area (Starlette): login, ticket lists and pages. Reads storage, never mails."""
