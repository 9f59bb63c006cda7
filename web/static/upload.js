/* The file field of a form, made friendlier: drag files onto it, paste screenshots anywhere on
   the page, see what is chosen and take a file out again. Without this script the plain file
   picker works the same; the server checks every file either way. */
(function () {
  "use strict";

  function pastedName(file, index) {
    var stamp = new Date().toISOString().slice(0, 19).replace(/[-:]/g, "").replace("T", "-");
    var extension = (file.type.split("/")[1] || "png").replace("jpeg", "jpg");
    return "captura-" + stamp + (index ? "-" + index : "") + "." + extension;
  }

  function setUp(form) {
    var input = form.querySelector('input[type="file"][name="files"]');
    var zone = form.querySelector("[data-drop]");
    var list = form.querySelector("[data-chosen]");
    if (!input || !zone || !list || typeof DataTransfer === "undefined") {
      return;
    }
    var chosen = [];
    zone.classList.add("enhanced");

    function sync() {
      var transfer = new DataTransfer();
      chosen.forEach(function (file) { transfer.items.add(file); });
      input.files = transfer.files;
      list.textContent = "";
      chosen.forEach(function (file, index) {
        var item = document.createElement("li");
        item.textContent = file.name + " (" + Math.max(1, Math.round(file.size / 1024)) + " KB) ";
        var remove = document.createElement("button");
        remove.type = "button";
        remove.className = "link";
        remove.textContent = zone.getAttribute("data-remove-label") || "×";
        remove.setAttribute("aria-label", (zone.getAttribute("data-remove-label") || "×") + " " + file.name);
        remove.addEventListener("click", function () {
          chosen.splice(index, 1);
          sync();
        });
        item.appendChild(remove);
        list.appendChild(item);
      });
    }

    function add(files, fromPaste) {
      Array.prototype.forEach.call(files, function (file, index) {
        if (fromPaste && (!file.name || file.name === "image.png")) {
          file = new File([file], pastedName(file, index), { type: file.type });
        }
        chosen.push(file);
      });
      sync();
    }

    input.addEventListener("change", function () {
      var picked = Array.prototype.slice.call(input.files);
      chosen = chosen.filter(function (file) { return picked.indexOf(file) === -1; });
      add(picked, false);
    });
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (event) {
        event.preventDefault();
        zone.classList.add("over");
      });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function () { zone.classList.remove("over"); });
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      if (event.dataTransfer && event.dataTransfer.files.length) {
        add(event.dataTransfer.files, false);
      }
    });
    document.addEventListener("paste", function (event) {
      var items = event.clipboardData ? event.clipboardData.files : null;
      if (items && items.length) {
        event.preventDefault();
        add(items, true);
      }
    });
  }

  function newContact(form) {
    var select = form.querySelector("[data-new-contact]");
    var fields = form.querySelector("[data-new-contact-fields]");
    if (!select || !fields) {
      return;
    }
    function show() { fields.hidden = select.value !== "new"; }
    select.addEventListener("change", function () {
      show();
      if (!fields.hidden) { fields.querySelector("input").focus(); }
    });
    show();
  }

  Array.prototype.forEach.call(document.querySelectorAll("form.upload-form"), function (form) {
    setUp(form);
    newContact(form);
  });
})();
