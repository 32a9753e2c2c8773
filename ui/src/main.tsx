// The bundle's entry: a UMD module whose default export is the component the Airflow UI renders
// (it imports the bundle and takes globalThis.AirflowPlugin).
import App from "./App";

export default App;
