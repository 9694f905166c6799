// Lint: typescript-eslint's recommended rules over the sources, tests, bench and docs helpers.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  {
    ignores: [
      "dist/",
      "node_modules/",
      ".tools/",
      "coverage/",
      "test/docs/.generated/",
      "test/docs/checks/",
      "docs/api/",
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: {
        process: "readonly",
        console: "readonly",
        setTimeout: "readonly",
        clearTimeout: "readonly",
        setInterval: "readonly",
        clearInterval: "readonly",
        setImmediate: "readonly",
        Buffer: "readonly",
        performance: "readonly",
        AbortController: "readonly",
        AbortSignal: "readonly",
        URL: "readonly",
        NodeJS: "readonly",
      },
    },
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "no-control-regex": "off",
    },
  },
  {
    // No line over 120 columns in the sources, comments and strings included (long URLs excepted);
    // the embedded-migrations module is generated.
    files: ["src/**/*.ts"],
    ignores: ["src/sql/migrations.generated.ts"],
    rules: {
      "max-len": ["error", { code: 120, ignoreUrls: true }],
    },
  },
);
