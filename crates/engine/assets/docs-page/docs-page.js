// Boots Swagger UI on this server's OpenAPI document. Served by GET /docs
// (crates/engine/src/docs_page.rs) from the binary: nothing is fetched from
// anywhere but this origin, which the page's Content-Security-Policy enforces.
"use strict";
window.ui = SwaggerUIBundle({
  // Relative to the page (/docs): the document of the server that serves it.
  url: "./openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  // "Try it out" is open on every operation; requests go to the document's
  // server, which is this origin unless the document names another.
  tryItOutEnabled: true,
  displayRequestDuration: true,
  // A bearer token or API key given in "Authorize" is kept in this browser's
  // localStorage across reloads and sent with every "Execute".
  persistAuthorization: true,
  // Never ask the public validator service about the document.
  validatorUrl: null,
  // The document is this server's: ?url= or ?configUrl= cannot swap it.
  queryConfigEnabled: false,
});
