"""Staff access: passwords, console sessions, bearer tokens, the admin token, sign-in limits,
the audit trail, and the scope of what each person may see. The HTTP side (middleware, routes)
is in :mod:`jiayuan.api.security` and :mod:`jiayuan.api.auth`."""
