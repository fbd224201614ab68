// The Socket.IO Admin UI's connection form, pointed at this server (app/web/__init__.py):
// its namespace is /admin-ui here (the UI's default, /admin, is the template's own
// admin namespace), over WebSocket only (a server of several workers accepts nothing
// else, TRANSPORTS). Sign in with an admin's username and password.
const defaults = {server_url: window.location.origin, namespace: "/admin-ui", ws_only: "true"};
for (const [key, value] of Object.entries(defaults)) {
  if (localStorage.getItem(key) === null) {
    localStorage.setItem(key, value);
  }
}
