// What the demo page's <script> tags define before app.js runs (app/web/templates/index.html).
declare const io: typeof import("socket.io-client").io;
