// ipywidgets' HTML manager (vendor/jupyter-widgets-html-manager/embed.js) typesets widget labels with the
// MathJax 2 API, `MathJax.Hub.Queue(["Typeset", MathJax.Hub, element])`. The book loads MathJax 3, which has
// no `Hub`, so every widget with a description threw "Cannot read properties of undefined (reading
// 'Queue')". This shim, loaded just before embed.js on pages with widgets, translates that one call to
// MathJax 3's `typesetPromise`. It is installed once MathJax 3 has replaced its configuration object
// (deferred scripts run before DOMContentLoaded; embed.js renders widgets on `load`, after that).
(function () {
  function install() {
    var mj = window.MathJax;
    if (!mj || mj.Hub) return;
    mj.Hub = {
      Queue: function () {
        for (var i = 0; i < arguments.length; i++) {
          var job = arguments[i];
          if (!Array.isArray(job) || job[0] !== "Typeset") continue;
          var el = job[2];
          var ready = (window.MathJax.startup && window.MathJax.startup.promise) || Promise.resolve();
          ready.then(function () {
            if (window.MathJax.typesetPromise) return window.MathJax.typesetPromise(el ? [el] : undefined);
          }).catch(function (err) { console.warn("MathJax typeset of a widget label failed", err); });
        }
      },
    };
  }
  install();
  document.addEventListener("DOMContentLoaded", install);
})();
