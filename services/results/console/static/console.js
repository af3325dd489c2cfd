/* Draws the page's plots from the JSON figures the server rendered next to them. */
(function () {
  "use strict";
  function draw() {
    var blocks = document.querySelectorAll('script[type="application/json"][data-plot]');
    for (var i = 0; i < blocks.length; i++) {
      var target = document.getElementById(blocks[i].getAttribute("data-plot"));
      var figure = JSON.parse(blocks[i].textContent);
      window.Plotly.newPlot(target, figure.data, figure.layout, {
        displaylogo: false, responsive: true, modeBarButtonsToRemove: ["sendDataToCloud"]
      }).then(function (gd) { gd.setAttribute("data-drawn", "true"); });
    }
    document.body.setAttribute("data-plots", String(blocks.length));
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", draw); } else { draw(); }
})();
