// Draws every tokdiag figure of an exported page (tokdiag.report.export) with the page's one plotly.js.
// Inlined as is; the page's Content-Security-Policy allows it by its SHA-256.
(function () {
  "use strict";
  function draw() {
    var figures = document.querySelectorAll("div.tokdiag-figure");
    for (var i = 0; i < figures.length; i++) {
      var figure = figures[i];
      var target = figure.querySelector("div.tokdiag-plot");
      try {
        var spec = JSON.parse(figure.querySelector("script.tokdiag-figure-spec").textContent);
        var config = Object.assign({responsive: true, displaylogo: false}, spec.config || {});
        window.Plotly.newPlot(target, spec.data || [], spec.layout || {}, config);
      } catch (err) {
        target.textContent = "This chart could not be drawn: " + err;
        console.error("tokdiag: chart " + i + " could not be drawn", err);
      }
    }
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
