import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// The Airflow UI exposes its React, ReactDOM, JSX runtime and Chakra UI as globals for plugin apps; using
// them (not copies) keeps one React tree and the UI's theme, light and dark.
export default defineConfig({
  plugins: [react()],
  define: { "process.env.NODE_ENV": JSON.stringify("production") },
  build: {
    outDir: "../airflow_cloud_paas/plugin/portal_dist",
    emptyOutDir: true,
    lib: { entry: "src/main.tsx", name: "AirflowPlugin", formats: ["umd"], fileName: () => "portal.js" },
    rollupOptions: {
      external: ["react", "react-dom", "react/jsx-runtime", "@chakra-ui/react"],
      output: {
        exports: "default",
        globals: {
          react: "React",
          "react-dom": "ReactDOM",
          "react/jsx-runtime": "ReactJSXRuntime",
          "@chakra-ui/react": "ChakraUI",
        },
      },
    },
  },
  test: { include: ["src/**/*.test.ts"] },
});
