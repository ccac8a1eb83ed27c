// The API reference page: swagger-ui over /api/v1/openapi.json. Read-only: "Try it out"
// is off, since the API takes a bearer token this page does not have.
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var el = document.getElementById("swagger");
    if (!el || !window.SwaggerUIBundle) return;
    window.SwaggerUIBundle({
      url: el.getAttribute("data-spec"), domNode: el, deepLinking: true,
      supportedSubmitMethods: [], defaultModelsExpandDepth: 0, docExpansion: "list"
    });
  });
})();
