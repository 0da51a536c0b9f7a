// The widgets' HTML manager (@jupyter-widgets/html-manager 1.x) typesets widget labels with MathJax 2's
// `MathJax.Hub.Queue(["Typeset", MathJax.Hub, element])` whenever `window.MathJax` exists; this site loads
// MathJax 3, which has no `Hub`, so on a page with both maths and widgets every widget threw "reading 'Queue'".
// This gives every value of window.MathJax (Sphinx's config object, then MathJax 3 itself) a `Hub.Queue` that
// typesets the element with MathJax 3 once it is ready (before that, MathJax's first pass typesets the page).
(function () {
  const hub = {
    Queue: (...jobs) => {
      for (const job of jobs) {
        const element = Array.isArray(job) && job[0] === "Typeset" ? job[2] : null;
        const mj = window.MathJax;
        if (element && mj && typeof mj.typesetPromise === "function") mj.typesetPromise([element]).catch(() => {});
      }
    },
  };
  const withHub = (value) => {
    if (value && typeof value === "object" && !("Hub" in value)) value.Hub = hub;
    return value;
  };
  let current = withHub(window.MathJax);
  Object.defineProperty(window, "MathJax", {
    configurable: true,
    get: () => current,
    set: (value) => {
      current = withHub(value);
    },
  });
})();
